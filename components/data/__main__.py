from litops.core.component_cli import run_main

from .cli import main

if __name__ == "__main__":
    run_main(main, "data")
