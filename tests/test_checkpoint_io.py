"""Reading checkpoints with weights_only=True: numpy metadata beside the state dict, nothing executable."""
import zipfile

import numpy as np
import pytest
import torch

from predict.encoders.checkpoints import read_checkpoint
from predict.model_encoder import EncoderError


def as_numpy1_pickle(path):
    """Rewrite a torch.save zip so that its pickle names numpy 1.x's module path, as old checkpoints do."""
    with zipfile.ZipFile(path) as src:
        entries = {info: src.read(info.filename) for info in src.infolist()}
    with zipfile.ZipFile(path, "w") as dst:
        for info, data in entries.items():
            if info.filename.endswith("data.pkl"):  # protocol 2 GLOBAL opcodes: newline-terminated names
                data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
            dst.writestr(info, data)


@pytest.mark.parametrize("numpy1", [False, True])
def test_numpy_scalars_beside_the_state_dict_load(tmp_path, numpy1):
    path = tmp_path / "AMFMN.tar"
    state = {"w": torch.arange(3.0)}
    torch.save({"epoch": 7, "model": state, "best_rsum": np.float64(412.5), "options": {"lr": 0.0002}}, path)
    if numpy1:
        as_numpy1_pickle(path)
        assert b"numpy.core.multiarray" in zipfile.ZipFile(path).read(
            next(n for n in zipfile.ZipFile(path).namelist() if n.endswith("data.pkl")))
    checkpoint = read_checkpoint(str(path), "AMFMN checkpoint")
    assert checkpoint["best_rsum"] == 412.5 and checkpoint["epoch"] == 7
    assert torch.equal(checkpoint["model"]["w"], state["w"])


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "extra": Payload()}, path)
    with pytest.raises(EncoderError, match=r"evil.pth: cannot read demo checkpoint \(refused: holds Python objects \(print\)"):
        read_checkpoint(str(path), "demo checkpoint")
    assert "code ran" not in capsys.readouterr().out
