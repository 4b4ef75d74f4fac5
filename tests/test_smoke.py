from tests.support import GraphQLClient


async def test_tour(api: GraphQLClient) -> None:
    ann = await api.account("Ann")
    board = await api.board(ann)
    card = await api.card(ann, board)
    await api.comment(ann, card)
    data = await api.data(
        "query($id: ID!) { board(id: $id) { name owner { name email }"
        " members { role user { name } } cards { title comments { body author { name } } } } }",
        {"id": board},
        token=ann.token,
    )
    assert data["board"]["cards"][0]["comments"][0]["body"] == "Looks good"
