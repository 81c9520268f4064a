"""Two accounts on one server cannot see, use or change each other's resources; 20 clients at once get no error."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from server_harness import (
    arithmetic_jsonl,
    create_evaluator,
    create_job,
    small_job,
    upload_dataset,
)


def test_accounts_are_isolated(server):
    team_key = server.add_account("team")
    with server.client() as local, server.client(team_key) as team:
        assert upload_dataset(local, "local", "private", arithmetic_jsonl(5)).status_code == 200
        create_evaluator(local, "local", "private-eval")
        job = small_job("accounts/local/datasets/private", "accounts/local/evaluators/private-eval")
        create_job(local, "local", "private-job", job)

        for path in ("datasets", "evaluators", "reinforcementFineTuningJobs", "models"):
            response = team.get(f"/v1/accounts/local/{path}")
            assert response.status_code == 404, path
            assert response.json()["error"]["status"] == "NOT_FOUND"
        assert team.get("/v1/accounts/local/datasets/private").status_code == 404
        assert (
            team.post(
                "/v1/accounts/local/reinforcementFineTuningJobs/private-job:cancel", json={}
            ).status_code
            == 404
        )
        assert team.delete("/v1/accounts/local/datasets/private").status_code == 404

        # The same ids in the other account are separate resources.
        assert upload_dataset(team, "team", "private", arithmetic_jsonl(3)).status_code == 200
        assert team.get("/v1/accounts/team/datasets/private").json()["exampleCount"] == "3"
        assert local.get("/v1/accounts/local/datasets/private").json()["exampleCount"] == "5"
        assert [d["name"] for d in team.get("/v1/accounts/team/datasets").json()["datasets"]] == [
            "accounts/team/datasets/private"
        ]

        # Naming another account's dataset in a job finds nothing.
        stolen = small_job("accounts/local/datasets/private", "accounts/local/evaluators/private-eval")
        refused = team.post("/v1/accounts/team/reinforcementFineTuningJobs", json=stolen)
        assert refused.status_code == 400 and "not found" in refused.json()["error"]["message"]
        assert local.get("/v1/accounts/team/datasets").status_code == 404


def test_twenty_concurrent_clients_create_and_read_without_error(server):
    with server.client() as setup:
        create_evaluator(setup, "local", "shared-eval")

    def one_client(index: int) -> list[int]:
        statuses = []
        with server.client() as client:
            dataset_id = f"concurrent-{index}"
            statuses.append(
                upload_dataset(client, "local", dataset_id, arithmetic_jsonl(10 + index)).status_code
            )
            statuses.append(client.get(f"/v1/accounts/local/datasets/{dataset_id}").status_code)
            job = small_job(f"accounts/local/datasets/{dataset_id}", "accounts/local/evaluators/shared-eval")
            created = client.post(
                "/v1/accounts/local/reinforcementFineTuningJobs",
                params={"reinforcementFineTuningJobId": f"concurrent-job-{index}"},
                json=job,
            )
            statuses.append(created.status_code)
            for _ in range(3):
                statuses.append(client.get("/v1/accounts/local/reinforcementFineTuningJobs").status_code)
                statuses.append(
                    client.get("/v1/accounts/local/datasets", params={"pageSize": 200}).status_code
                )
            statuses.append(
                client.get(
                    f"/v1/accounts/local/reinforcementFineTuningJobs/concurrent-job-{index}"
                ).status_code
            )
        return statuses

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one_client, range(20)))
    assert all(status == 200 for statuses in results for status in statuses), results
    with server.client() as client:
        datasets = client.get("/v1/accounts/local/datasets", params={"pageSize": 200}).json()["datasets"]
        counts = {d["name"].rsplit("/", 1)[1]: d["exampleCount"] for d in datasets}
        assert all(counts[f"concurrent-{i}"] == str(10 + i) for i in range(20))
        jobs = client.get("/v1/accounts/local/reinforcementFineTuningJobs", params={"pageSize": 200}).json()
        assert {f"concurrent-job-{i}" for i in range(20)} <= {
            j["name"].rsplit("/", 1)[1] for j in jobs["reinforcementFineTuningJobs"]
        }
