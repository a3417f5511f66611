"""Data set tools a user runs apart from training: ``resomap data prepare|analyze``.

``prepare`` lays a folder (or the Kaggle or synthetic set) out as ``{train,val,test}/<class>/``;
``analyze`` reports its class balance, image sizes and cross-split duplicates. They read images
through :mod:`resomap.data`; nothing a training run imports lives here, and :mod:`resomap.data`
never imports this package (imports flow one way).
"""
