import os

import torch

# Without a GPU, Triton kernels run on CPU tensors through the interpreter. Triton reads this when a kernel is
# decorated, so it must be set before any lowbit_flex.kernels module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
