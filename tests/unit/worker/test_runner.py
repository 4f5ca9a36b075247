from service.training.spec import TrainingSpec
from service.worker.runner import Reporter


def test_a_cancel_is_seen_even_when_no_progress_is_written(client, services):
    ds = client.post("/v1/datasets", json={"x": [[1.0], [2.0]], "y": [[1.0], [2.0]]}).json()
    job = services.meta.create_job(tenant="default", dataset_id=ds["id"],
                                   spec=TrainingSpec(seed=0).model_dump(mode="json"),
                                   device="cpu", model_name=None, epochs=10)
    reporter = Reporter(services.meta, job.id, interval=0.0)
    assert reporter.should_stop() is False
    client.post(f"/v1/jobs/{job.id}/cancel")
    assert reporter.should_stop() is True
