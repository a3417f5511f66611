"""What a training run reads its images with: the datamodule, its cache, augmentation and checks.

Also the embedded synthetic data set, which a run generates at setup (``data=synthetic``). The
tools a user runs apart from training (``resomap data prepare|analyze``) live in
:mod:`resomap.data_tools`, which imports this package and is never imported by it.
"""
