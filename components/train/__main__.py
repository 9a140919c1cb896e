from litops.core.component_cli import run_main
from litops.train.cli import main

run_main(main, "train")
