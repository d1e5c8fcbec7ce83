// Write an order and its TikTok Purchase event in one SQLite transaction (Go, database/sql).
// Usage: go run ./sqlite [PATH]   (or DB_PATH=...; default forwarder.db)
package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"os"

	_ "github.com/mattn/go-sqlite3"
)

type Order struct {
	ID        int64
	Email     string
	Phone     string
	IP        string
	UserAgent string
	Ttclid    string
	Ttp       string
	Total     float64
	Contents  []map[string]any
	URL       string
}

func placeOrder(db *sql.DB, o Order) error {
	payload, err := json.Marshal(map[string]any{
		// Raw identifiers: the daemon normalises and hashes email and phone itself.
		"user": map[string]any{
			"email": o.Email, "phone": o.Phone, "ip": o.IP,
			"user_agent": o.UserAgent, "ttclid": o.Ttclid, "ttp": o.Ttp,
		},
		"properties": map[string]any{
			"currency": "USD", "value": o.Total, "content_type": "product", "contents": o.Contents,
		},
		"page": map[string]any{"url": o.URL},
		// The visitor's choice in your consent banner; forwarder enforces it.
		"consent": map[string]any{"ad_user_data": "granted", "ad_personalization": "granted"},
	})
	if err != nil {
		return err
	}
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback() // a no-op after Commit
	if _, err := tx.Exec(`INSERT INTO orders (id, email, total) VALUES (?, ?, ?)
		ON CONFLICT DO NOTHING`, o.ID, o.Email, o.Total); err != nil {
		return err
	}
	if _, err := tx.Exec(`INSERT INTO tiktok_outbox (event_id, event, payload)
		VALUES (?, 'Purchase', ?) ON CONFLICT DO NOTHING`,
		fmt.Sprintf("order-%d", o.ID), string(payload)); err != nil {
		return err
	}
	return tx.Commit()
}

func main() {
	path := os.Getenv("DB_PATH")
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	if path == "" {
		path = "forwarder.db"
	}
	// _busy_timeout: wait for the daemon's short write transactions instead of failing with
	// "database is locked"; _txlock=immediate takes the write lock at BEGIN.
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000&_txlock=immediate")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS orders
		(id INTEGER PRIMARY KEY, email TEXT, total REAL)`); err != nil {
		log.Fatal(err)
	}
	err = placeOrder(db, Order{
		ID: 10492, Email: "Alice@Example.com", Phone: "+1 213 373 4253",
		IP: "203.0.113.7", UserAgent: "Mozilla/5.0 (X11; Linux x86_64)",
		Ttclid: "E.C.P.abc123", Ttp: "2Xwabc123", Total: 46.0,
		Contents: []map[string]any{{"content_id": "sku-1077218", "quantity": 2, "price": 23.0}},
		URL:      "https://shop.example/checkout/thanks",
	})
	if err != nil {
		log.Fatal(err)
	}
}
