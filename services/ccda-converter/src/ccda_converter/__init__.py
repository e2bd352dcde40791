"""ccda_converter."""


def compiled() -> bool:
    """True when the conversion modules are the mypyc-compiled build (build_mypyc.py) rather
    than their Python source."""
    from ccda_converter import convert

    return not convert.__file__.endswith(".py")
