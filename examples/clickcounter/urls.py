from django.contrib import admin
from django.urls import include, path

from examples.clickcounter.clicks import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("click/", views.click),
    path("", include("twistedq.contrib.django.urls")),
]
