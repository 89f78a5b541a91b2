"""The bundled tool set: a small shop (search products, check inventory, create an order),
weather and unit conversion. Every public function here becomes a tool of
`agentmill synth tools agentmill.synth.toolset` (schemas from type hints and docstrings).

Deterministic, offline, and strict about their inputs, so a generated call that names a
product or city that does not exist fails the execution check.

>>> search_products("mug")[0]["sku"]
'MUG-01'
>>> convert_units(10, "km", "mi")
{'value': 6.2137, 'unit': 'mi'}
"""

from __future__ import annotations

from typing import Literal

PRODUCTS: dict[str, dict[str, object]] = {
    "MUG-01": {"name": "Ceramic mug", "category": "kitchen", "price": 9.5, "stock": 42},
    "KETTLE-02": {"name": "Electric kettle", "category": "kitchen", "price": 34.0, "stock": 7},
    "LAMP-03": {"name": "Desk lamp", "category": "office", "price": 22.0, "stock": 0},
    "CHAIR-04": {"name": "Office chair", "category": "office", "price": 129.0, "stock": 3},
    "TENT-05": {"name": "Two-person tent", "category": "outdoor", "price": 89.0, "stock": 12},
    "BOTTLE-06": {"name": "Steel water bottle", "category": "outdoor", "price": 15.0, "stock": 60},
    "PEN-07": {"name": "Gel pen (pack of 10)", "category": "office", "price": 6.0, "stock": 200},
}
WEATHER: dict[str, tuple[float, str]] = {
    "paris": (14.0, "cloudy"),
    "london": (11.0, "rain"),
    "tokyo": (19.0, "sunny"),
    "new york": (16.0, "windy"),
    "berlin": (9.0, "fog"),
    "sydney": (23.0, "sunny"),
}
_TO_BASE = {
    "km": ("length", 1000.0),
    "m": ("length", 1.0),
    "mi": ("length", 1609.344),
    "ft": ("length", 0.3048),
    "kg": ("mass", 1.0),
    "lb": ("mass", 0.45359237),
    "l": ("volume", 1.0),
    "gal": ("volume", 3.785411784),
}


def search_products(
    query: str, category: Literal["kitchen", "office", "outdoor"] | None = None
) -> list[dict[str, object]]:
    """Search the shop's catalogue by words in the product name.

    Args:
        query: words to look for in product names, e.g. "mug" or "tent"
        category: only products of this category
    """
    words = query.lower().split()
    hits = [
        {"sku": sku, "name": p["name"], "price": p["price"]}
        for sku, p in PRODUCTS.items()
        if any(w in str(p["name"]).lower() for w in words)
        and (category is None or p["category"] == category)
    ]
    return hits


def check_inventory(sku: str) -> dict[str, object]:
    """How many units of a product are in stock.

    Args:
        sku: the product's SKU, e.g. "MUG-01"
    """
    if sku.upper() not in PRODUCTS:
        raise ValueError(f"unknown sku {sku!r}; search_products gives valid SKUs")
    return {"sku": sku.upper(), "in_stock": PRODUCTS[sku.upper()]["stock"]}


def create_order(sku: str, quantity: int, customer_email: str) -> dict[str, object]:
    """Place an order for a product.

    Args:
        sku: the product's SKU, e.g. "MUG-01"
        quantity: how many units, at least 1
        customer_email: where the confirmation goes
    """
    product = PRODUCTS.get(sku.upper())
    if product is None:
        raise ValueError(f"unknown sku {sku!r}")
    if quantity < 1 or "@" not in customer_email:
        raise ValueError("quantity must be >= 1 and customer_email an e-mail address")
    if int(product["stock"]) < quantity:  # type: ignore[call-overload]
        raise ValueError(f"only {product['stock']} units of {sku} in stock")
    total = round(float(product["price"]) * quantity, 2)  # type: ignore[arg-type]
    return {"order_id": f"ORD-{sku.upper()}-{quantity}", "total": total, "email": customer_email}


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict[str, object]:
    """The current weather in a city.

    Args:
        city: the city name, e.g. "Paris"
        unit: temperature unit
    """
    found = WEATHER.get(city.strip().lower())
    if found is None:
        raise ValueError(f"no weather station for {city!r}; known: {', '.join(WEATHER)}")
    temp, sky = found
    temp = temp if unit == "celsius" else round(temp * 9 / 5 + 32, 1)
    return {"city": city, "temperature": temp, "unit": unit, "sky": sky}


def convert_units(value: float, from_unit: str, to_unit: str) -> dict[str, object]:
    """Convert a length, mass or volume between units (km, m, mi, ft, kg, lb, l, gal).

    Args:
        value: the amount to convert
        from_unit: the unit of `value`, e.g. "km"
        to_unit: the unit wanted, e.g. "mi"
    """
    a, b = _TO_BASE.get(from_unit.lower()), _TO_BASE.get(to_unit.lower())
    if a is None or b is None or a[0] != b[0]:
        raise ValueError(f"cannot convert {from_unit} to {to_unit}")
    return {"value": round(value * a[1] / b[1], 4), "unit": to_unit}
