module example.com/forwarder-examples

go 1.19

require (
	github.com/lib/pq v1.10.7
	github.com/mattn/go-sqlite3 v1.14.16
)
