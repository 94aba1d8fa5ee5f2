"""Sources -> stream: gateway adapters, the HTTP ingest server and the producer."""
