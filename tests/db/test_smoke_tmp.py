import sqlalchemy as sa

def test_tables_exist(engine):
    with engine.connect() as c:
        assert c.scalar(sa.text("select count(*) from items")) == 0
