from django.db import models


class Note(models.Model):
    """A line of text someone posted through the form."""

    text = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return self.text


class Counter(models.Model):
    """A named count, incremented in the database (not in a Python global)."""

    name = models.CharField(max_length=50, unique=True)
    value = models.IntegerField(default=0)

    def __str__(self):
        return f"{self.name}={self.value}"
