// Write an order and its TikTok Purchase event in one SQLite transaction (Node, better-sqlite3).
// Usage: node insert_sqlite.mjs [PATH]   (or DB_PATH=...; default forwarder.db)
import Database from 'better-sqlite3';

const db = new Database(process.argv[2] ?? process.env.DB_PATH ?? 'forwarder.db', {
  timeout: 5000, // SQLite's busy timeout: wait for the daemon's short writes, don't fail
});
db.exec('CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, email TEXT, total REAL)');

const insertOrder = db.prepare(
  'INSERT INTO orders (id, email, total) VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
);
const insertEvent = db.prepare(
  "INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (?, 'Purchase', ?) " +
    'ON CONFLICT DO NOTHING',
);

// db.transaction(): BEGIN, COMMIT on return, ROLLBACK if the function throws.
const placeOrder = db.transaction((order) => {
  insertOrder.run(order.id, order.email, order.total);
  const payload = {
    // Raw identifiers: the daemon normalises and hashes email and phone itself.
    user: {
      email: order.email,
      phone: order.phone,
      ip: order.ip,
      user_agent: order.userAgent,
      ttclid: order.ttclid,
      ttp: order.ttp,
    },
    properties: {
      currency: 'USD',
      value: order.total,
      content_type: 'product',
      contents: order.contents,
    },
    page: { url: order.url },
    // The visitor's choice in your consent banner; forwarder enforces it.
    consent: { ad_user_data: 'granted', ad_personalization: 'granted' },
  };
  insertEvent.run(`order-${order.id}`, JSON.stringify(payload));
});

placeOrder({
  id: 10492,
  email: 'Alice@Example.com',
  phone: '+1 213 373 4253',
  ip: '203.0.113.7',
  userAgent: 'Mozilla/5.0 (X11; Linux x86_64)',
  ttclid: 'E.C.P.abc123',
  ttp: '2Xwabc123',
  total: 46.0,
  contents: [{ content_id: 'sku-1077218', quantity: 2, price: 23.0 }],
  url: 'https://shop.example/checkout/thanks',
});
db.close();
