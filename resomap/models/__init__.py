"""Architectures studied by ResoMap; each config in ``conf/model/`` names one builder here."""
