"""The emulated i.MX6 boards as client trainers: a node whose device profile is ``imx6``,
``imx6-792`` or ``imx6-1200`` trains with the ARM build of its kernel under ``qemu-arm -cpu
cortex-a9`` (``ecufl.kernels.arm.emulate``), and its outcome carries the counted ARM instructions,
the projected A9 seconds and the trainer's peak memory.

Importing this module registers the trainer for every emulated profile of
``ecufl.kernels.arm.profiles`` (the ClientApp imports it). Anything that keeps the board from
training (a kernel without an ARM trainer, qemu or the counting plugin missing, a trainer that
crashes or outgrows the profile's memory) becomes ``EmulationFailed``: one line, which the
ClientApp puts in its report's ``error``; the server leaves the client out of that round.
"""

from __future__ import annotations

import numpy as np

from ecufl.client.runner import TrainJob, TrainOutcome, register_trainer
from ecufl.kernels.arm import count, emulate, profiles


class EmulationFailed(ValueError):
    """One line: the profile, the kernel and why the emulated board could not train."""


def train_emulated(job: TrainJob, images: np.ndarray, labels: np.ndarray) -> TrainOutcome:
    try:
        return TrainOutcome(**emulate.client_round(job, images, labels))
    except (count.EmulationError, emulate.UnknownTrainer, profiles.UnknownProfile) as e:
        msg = " ".join(str(e).split())  # one line, whatever qemu printed
        raise EmulationFailed(f"emulated {job.profile} ({job.kernel}): {msg}") from None


for _profile in profiles.PROFILES.values():
    if _profile.emulated:
        register_trainer(_profile.name, train_emulated)
