"""Example rule files shipped with reshaper."""
import pathlib

EXAMPLES = pathlib.Path(__file__).resolve().parent


def example(name: str) -> pathlib.Path:
    return EXAMPLES / name
