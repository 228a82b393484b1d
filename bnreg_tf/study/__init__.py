"""The study floor: the paper's ablation grid run through the run floor, and its report
(docs/architecture.md)."""
from bnreg_tf.nn.backends import require_tensorflow

require_tensorflow(__name__)   # one line under another Keras backend (issue 24)
