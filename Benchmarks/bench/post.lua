-- wrk script: POST /tasks with a small JSON body (the Authorization header comes from -H).
wrk.method = "POST"
wrk.body = '{"title":"bench"}'
wrk.headers["Content-Type"] = "application/json"
