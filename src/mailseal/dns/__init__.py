"""The DNS edge: the only package that imports dnspython."""
