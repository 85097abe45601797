"""The DNS edge: the only package that imports dnspython."""


def skip_unused_transports() -> None:
    """Tell dnspython not to load its DNS-over-HTTPS stack (httpx, trio), which mailseal never uses.

    dnspython imports it whenever it is installed, which costs a command-line
    run about 0.1 s. Only applications call this (the ``mailseal`` command),
    never the library: a program that embeds mailseal may use DoH itself.
    """
    import dns._features

    dns._features.force("doh", enabled=False)
