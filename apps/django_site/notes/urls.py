from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("fast/", views.fast),
    path("slow/", views.slow),
    path("notes/new/", views.new_note, name="new-note"),
    path("api/notes/", views.notes_json),
    path("visits/", views.visits),
    path("pid/", views.pid),
]
