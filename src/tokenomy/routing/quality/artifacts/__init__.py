"""Shipped router artifacts (built by scripts/train_default_router.sh); a package so wheels include the .npz files."""
