"""No URLs: the settings with brama_sql alone."""

urlpatterns: list[object] = []
