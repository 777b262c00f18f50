from django.db import models


class ClickCount(models.Model):
    url = models.URLField(unique=True)
    clicks = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.url}: {self.clicks}"
