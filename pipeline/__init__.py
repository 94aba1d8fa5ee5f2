"""Stream -> ClickHouse: processor, writer and consumer loop."""
