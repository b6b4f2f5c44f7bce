"""The reference loop (peer_accuracy.py) with its DiffAugment replaced by the identity: the augmentation-off arm of the bisection."""
import sys

sys.path.insert(0, ".peer/harness")
import mtt_reference  # noqa: E402
import peer_accuracy  # noqa: E402

_import = mtt_reference.import_reference


def _without_augmentation():
    utils, reparam_module = _import()
    utils.DiffAugment = lambda x, *args, **kwargs: x
    return utils, reparam_module


peer_accuracy.import_reference = _without_augmentation
sys.argv[0] = "peer_accuracy.py"
peer_accuracy.main()
