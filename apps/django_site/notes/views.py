"""The site's views: the course notes' experiment (/fast/ and /slow/), and
one of each kind a real site has (a template page, a form with CSRF, JSON,
database reads and writes)."""

import os
import time

from django import forms
from django.db.models import F
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render

from .models import Counter, Note


# ANCHOR: experiment
def fast(request):
    """Answers at once."""
    return HttpResponse("fast\n", content_type="text/plain")


def slow(request):
    """Sleeps ?s= seconds (default 3) before answering, like a slow query."""
    seconds = min(float(request.GET.get("s", "3")), 60.0)
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds:g} s\n", content_type="text/plain")
# ANCHOR_END: experiment


def index(request):
    """A template page: the latest notes, styled by notes/static/notes/style.css."""
    return render(request, "notes/index.html", {"notes": Note.objects.all()[:20]})


class NoteForm(forms.Form):
    text = forms.CharField(max_length=200)


def new_note(request):
    """A form: GET shows it (with a CSRF token), POST saves a note."""
    if request.method == "POST":
        form = NoteForm(request.POST)
        if form.is_valid():
            Note.objects.create(text=form.cleaned_data["text"])
            return redirect("index")
    else:
        form = NoteForm()
    return render(request, "notes/new.html", {"form": form})


def notes_json(request):
    """JSON: the notes, newest first, and which worker answered."""
    notes = [
        {"id": n.id, "text": n.text, "created": n.created.isoformat()}
        for n in Note.objects.all()[:100]
    ]
    return JsonResponse({"notes": notes, "pid": os.getpid()})


def visits(request):
    """Reads and writes the database: one more visit, counted by SQLite
    (`value = value + 1` in one UPDATE, right under any number of workers)."""
    Counter.objects.get_or_create(name="visits")
    Counter.objects.filter(name="visits").update(value=F("value") + 1)
    count = Counter.objects.get(name="visits").value
    return JsonResponse({"visits": count, "pid": os.getpid()})


def pid(request):
    return HttpResponse(f"{os.getpid()}\n", content_type="text/plain")
