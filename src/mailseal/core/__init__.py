"""The sans-IO DKIM core: bytes in, values out; no sockets, files or clocks."""
