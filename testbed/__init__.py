"""What the test suite and the benchmarks both stand on: the machine's PostgreSQL and
Redis or embedded ones, FerrumDeck processes with their logs, real MCP servers, and
bounded waiting. Neither `tests` nor `bench` owns it, so a benchmark never imports the
test suite and the test suite never imports a benchmark."""
