"""What the tests share: emulators and mounts as child processes, clients, waiting."""
