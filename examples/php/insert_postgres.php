<?php
// Write an order and its TikTok Purchase event in one PostgreSQL transaction (PHP, PDO).
// Usage: php insert_postgres.php [URL]   (or DATABASE_URL=postgresql://user:pass@host:5432/db)

function placeOrder(PDO $pdo, array $order): void
{
    $payload = [
        // Raw identifiers: the daemon normalises and hashes email and phone itself.
        'user' => [
            'email' => $order['email'],
            'phone' => $order['phone'],
            'ip' => $order['ip'],
            'user_agent' => $order['user_agent'],
            'ttclid' => $order['ttclid'],
            'ttp' => $order['ttp'],
        ],
        'properties' => [
            'currency' => 'USD',
            'value' => $order['total'],
            'content_type' => 'product',
            'contents' => $order['contents'],
        ],
        'page' => ['url' => $order['url']],
        // The visitor's choice in your consent banner; forwarder enforces it.
        'consent' => ['ad_user_data' => 'granted', 'ad_personalization' => 'granted'],
    ];
    $pdo->beginTransaction();
    try {
        $pdo->prepare('INSERT INTO orders (id, email, total) VALUES (?, ?, ?) ON CONFLICT DO NOTHING')
            ->execute([$order['id'], $order['email'], $order['total']]);
        $pdo->prepare("INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (?, 'Purchase', ?)"
                . ' ON CONFLICT DO NOTHING')
            ->execute(['order-' . $order['id'], json_encode($payload, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES)]);
        $pdo->commit();
    } catch (Throwable $e) {
        $pdo->rollBack();
        throw $e;
    }
}

// PDO wants a DSN, not a URL: postgresql://user:pass@host:port/db -> pgsql:host=...;dbname=...
$url = parse_url($argv[1] ?? getenv('DATABASE_URL'));
$dsn = sprintf('pgsql:host=%s;port=%d;dbname=%s', $url['host'], $url['port'] ?? 5432, ltrim($url['path'], '/'));
$pdo = new PDO($dsn, urldecode($url['user'] ?? ''), urldecode($url['pass'] ?? ''), [
    PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
]);
$pdo->exec('CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, email text, total numeric(12, 2))');

placeOrder($pdo, [
    'id' => 10492,
    'email' => 'Alice@Example.com',
    'phone' => '+1 213 373 4253',
    'ip' => '203.0.113.7',
    'user_agent' => 'Mozilla/5.0 (X11; Linux x86_64)',
    'ttclid' => 'E.C.P.abc123',
    'ttp' => '2Xwabc123',
    'total' => 46.0,
    'contents' => [['content_id' => 'sku-1077218', 'quantity' => 2, 'price' => 23.0]],
    'url' => 'https://shop.example/checkout/thanks',
]);
