"""FedEx REST APIs (OAuth2 client credentials): rate, ship, cancel, track."""
