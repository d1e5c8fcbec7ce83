// Write an order and its TikTok Purchase event in one PostgreSQL transaction (Node, pg).
// Usage: node insert_postgres.mjs [URL]   (or DATABASE_URL=postgresql://user:pass@host/db)
import pg from 'pg';

const pool = new pg.Pool({ connectionString: process.argv[2] ?? process.env.DATABASE_URL });

async function placeOrder(order) {
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
  const client = await pool.connect(); // one connection for the whole transaction
  try {
    await client.query('BEGIN');
    await client.query(
      'INSERT INTO orders (id, email, total) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
      [order.id, order.email, order.total],
    );
    await client.query(
      "INSERT INTO tiktok_outbox (event_id, event, payload) VALUES ($1, 'Purchase', $2) " +
        'ON CONFLICT DO NOTHING',
      [`order-${order.id}`, JSON.stringify(payload)],
    );
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  } finally {
    client.release();
  }
}

try {
  await pool.query(
    'CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, email text, total numeric(12, 2))',
  );
  await placeOrder({
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
} finally {
  await pool.end();
}
