"""Template tags: ``{% load edgerec %}``.

``{% recommend user k=8 as recs %}``
    "Recommended for you". ``user`` is a user id (``str``/``int``) or a Django user object; an anonymous or
    missing user gets the popularity ranking. Extra keyword arguments are catalog filters
    (``in_stock=True``, ``category="nails"``) when the bundle has those columns.
``{% similar_items item_id k=6 as also_viewed %}``
    "Customers also viewed".

Both give a :class:`~edgerec_sdk.Recommendations` (iterate it for ``.item_id``, ``.score``, ``.source``;
``.rec_id`` goes back with the click). Titles and other catalog columns: ``{% item_info rec.item_id as info %}``.
"""

from __future__ import annotations

from typing import Any

from django import template

from ....types import Recommendations
from .. import get_recommender

register = template.Library()

_ANONYMOUS = "anonymous"


@register.simple_tag
def recommend(user: object, k: int = 8, **filters: Any) -> Recommendations:
    """Recommendations for ``user`` (a cold answer for anonymous users)."""
    rec = get_recommender()
    uid = _user_id(user)
    if uid is None:
        return rec.recommend(_ANONYMOUS, k=int(k), history=(), filters=filters or None)
    return rec.recommend(uid, k=int(k), filters=filters or None)


@register.simple_tag
def similar_items(item_id: object, k: int = 6, **filters: Any) -> Recommendations:
    """Items whose vectors are closest to ``item_id``'s."""
    return get_recommender().similar_items(str(item_id), k=int(k), filters=filters or None)


@register.simple_tag
def item_info(item_id: object) -> dict[str, Any]:
    """The catalog row of ``item_id`` (``{}`` when unknown), e.g. ``info.title``."""
    info = get_recommender().items.get(str(item_id))
    return dict(info) if info else {}


def _user_id(user: object) -> str | int | None:
    if user is None or user == "":
        return None
    if isinstance(user, (str, int)) and not isinstance(user, bool):
        return user
    if getattr(user, "is_authenticated", True) is False:
        return None
    pk = getattr(user, "pk", None)
    return None if pk is None else str(pk)
