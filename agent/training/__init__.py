"""Training and export (the ``train`` extra). The only package that may import torch and
ultralytics, and only inside the functions that need them, so ``--help`` stays fast."""
