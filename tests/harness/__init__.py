"""What tests and benchmarks share: the reference daemon in-process or as a process,
its configuration, the CLI, and waiting for the cache (private XMPP servers are in
``tests.servers``). Importing it imports no test module."""
