from django.http import HttpRequest, JsonResponse

from twistedq.contrib.django import delay_on_commit


def click(request: HttpRequest) -> JsonResponse:
    """
    Count a click on ``?url=...`` in the background, once this request's
    transaction commits; answer the task id to poll.
    """
    url = request.GET.get("url", "http://example.com/")
    result = delay_on_commit("increment_click", url)
    return JsonResponse({"task_id": result.task_id, "status": f"/celery/{result.task_id}/status/"})
