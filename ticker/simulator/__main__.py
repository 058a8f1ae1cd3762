"""`python -m ticker.simulator`: the same as `ticker sim`."""

from ticker.config import Settings
from ticker.logs import configure_logging
from ticker.simulator.server import serve


def main() -> None:
    settings = Settings()
    configure_logging(settings)
    serve(settings)


if __name__ == "__main__":
    main()
