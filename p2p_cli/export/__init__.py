"""Deployable exports of a trained model: ONNX and TorchScript.

The exported graph maps normalised images (B, 3, S, S) — resized to S × S, scaled to [0, 1],
normalised with the ImageNet mean and std — to ``logits`` (B, K) and ``min_distances`` (B, m),
each prototype's smallest squared L2 distance to any patch of the image (ProtoPNet, Chen et al.,
NeurIPS 2019; Euclidean for ProtoTree, Nauta et al., CVPR 2021). :mod:`.wrapper` builds that
module, :mod:`.onnx` and :mod:`.torchscript` write it, :mod:`.check` compares a written export
with PyTorch.
"""
