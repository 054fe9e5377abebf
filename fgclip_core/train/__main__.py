"""``python -m fgclip_core.train ...`` = ``fgclip train ...`` (the entry torchrun/deepspeed launch)."""

from fgclip_core.cli.train_cmd import train

if __name__ == "__main__":
    train(prog_name="python -m fgclip_core.train")
