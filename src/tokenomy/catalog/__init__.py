"""tokenomy.catalog: accelerators, models, sites (YAML, user-overridable) and API price lists.

    from tokenomy.catalog import load_catalog
    cat = load_catalog()                      # shipped data + $TOKENOMY_CATALOG files
    cat.accelerator("H100"), cat.model("meta-llama/Meta-Llama-3-8B-Instruct"), cat.site("us-va")

Price lists live in `tokenomy.catalog.prices` (imported lazily: they are larger).
"""

from .loader import Catalog, build_catalog, deep_merge, load_catalog, normalize_name
from .types import (
    Accelerator,
    ApiModelPrice,
    ModelArch,
    PurchasePrice,
    RentalPrice,
    Site,
    Sourced,
    TokenPrices,
)

__all__ = [
    "Accelerator",
    "ApiModelPrice",
    "Catalog",
    "ModelArch",
    "PurchasePrice",
    "RentalPrice",
    "Site",
    "Sourced",
    "TokenPrices",
    "build_catalog",
    "deep_merge",
    "load_catalog",
    "normalize_name",
]
