from django.urls import path
from relay import views

urlpatterns = [
    path("", views.index),
    path("speak", views.speak),
    path("stats", views.stats),
    path("debug/requests/<str:req_id>", views.debug_request),  # local runs only
]

# Rejections by Django itself answer with the relays' one JSON error shape too.
handler404 = views.not_found
handler400 = views.bad_request
