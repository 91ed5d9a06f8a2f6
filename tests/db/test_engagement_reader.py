"""The catalog and events as the servers read them: columns in id order, nothing shifted."""

import sqlalchemy as sa

from cascade_server.storage.engagement_reader import read_engagement
from cascade_server.storage.tables import ITEM_STATUSES, Event, Item, User


def test_items_and_their_categories_come_back_aligned_in_id_order(engine):
    rows = [
        ("i3", "c1", ["b", "a", "b"], "t3", "active"),
        ("i1", "", [], "", "hidden"),
        ("i2", "c2", ["z"], "two", "active"),
    ]
    with engine.begin() as connection:
        for external_id, creator, categories, title, status in rows:
            connection.execute(
                sa.insert(Item).values(
                    external_id=external_id,
                    creator_id=creator,
                    categories=categories,
                    title=title,
                    status=status,
                )
            )
        connection.execute(sa.insert(User).values(external_id="u1"))
        user = connection.execute(sa.select(User.id)).scalar_one()
        item = connection.execute(sa.select(Item.id).where(Item.external_id == "i2")).scalar_one()
        connection.execute(
            sa.insert(Event).values(
                event_id="e1", user_id=user, item_id=item, kind="click", occurred_at=sa.func.now()
            )
        )
    data = read_engagement(engine)
    assert list(data.item_ids) == ["i3", "i1", "i2"]  # insertion (id) order
    assert list(data.item_creators) == ["c1", "", "c2"]
    assert [tuple(c) for c in data.item_categories] == [("b", "a", "b"), (), ("z",)]
    assert list(data.item_titles) == ["t3", "", "two"]
    assert [ITEM_STATUSES[s] for s in data.item_status] == ["active", "hidden", "active"]
    assert len(data.item_created) == 3
    assert data.event_items.tolist() == [2]
    assert list(data.user_ids) == ["u1"]


def test_an_empty_catalog_reads_as_empty_columns(engine):
    data = read_engagement(engine)
    assert list(data.item_ids) == []
    assert list(data.item_categories) == []
    assert len(data.item_status) == len(data.item_created) == 0
