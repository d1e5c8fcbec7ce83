"""The `forwarder` command's commands, one module per command group; common.py is the one way
they read settings and open the store; helptext.py what their --help says."""
