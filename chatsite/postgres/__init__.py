"""Django's PostgreSQL backend with health checks that cost a round trip only after a connection sat idle
(``ENGINE = "chatsite.postgres"``; see ``base.DatabaseWrapper``)."""
