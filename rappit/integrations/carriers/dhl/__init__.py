"""DHL Express, MyDHL API (REST, HTTP Basic): rate, create shipment, track. No shipment void exists."""
