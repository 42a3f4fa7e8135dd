from django.contrib import admin

from .models import Counter, Note

admin.site.register(Note)
admin.site.register(Counter)
