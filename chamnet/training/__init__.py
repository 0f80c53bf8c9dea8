"""Training oracle: accuracy of an architecture by training it with a seeded proxy schedule.

    from chamlab.chamnet.spaces import SPACES
    from chamlab.chamnet.training import Schedule, TrainingOracle
    with TrainingOracle(SPACES.get("macro-cifar10"), "digits", schedule=Schedule(epochs=1)) as oracle:
        [acc] = oracle([(0, 0, 0, 0, 0, 0, 0, 1)])       # percent, on the validation split
        weights = oracle.state_dict((0, 0, 0, 0, 0, 0, 0, 1))  # for space.build(arch).load_state_dict

Datasets and how they map onto a space's input: :mod:`.data`; the schedule: :mod:`.schedule`;
executors and the on-disk cache: :mod:`.oracle`. Needs torch (imported inside functions).
"""

from .data import DIGITS, FASHION_MNIST_DEBIAN, ClassCountError, Dataset, load_dataset
from .oracle import EXECUTORS, TrainingCache, TrainingError, TrainingOracle, TrainRecord
from .schedule import Schedule

__all__ = [
    "DIGITS",
    "EXECUTORS",
    "FASHION_MNIST_DEBIAN",
    "ClassCountError",
    "Dataset",
    "Schedule",
    "TrainRecord",
    "TrainingCache",
    "TrainingError",
    "TrainingOracle",
    "load_dataset",
]
