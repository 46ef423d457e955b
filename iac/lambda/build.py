"""Build the freeze Lambda's package: iac/build/freeze_gpu.zip (deterministic; standard library only).

    python3 iac/lambda/build.py [OUT.zip]
"""

import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    info = zipfile.ZipInfo("freeze_gpu.py", date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(info, (HERE / "freeze_gpu.py").read_bytes())
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent / "build" / "freeze_gpu.zip"))
