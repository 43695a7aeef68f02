// The openai Node SDK against a running gateway: chat, a streamed Responses call, embeddings.
// Usage: node client.mjs BASE_URL API_KEY CHAT_MODEL RESPONSES_MODEL EMBEDDING_MODEL
// Prints one JSON object with what each call returned (text and usage.cost).
import OpenAI from "openai";

const [baseURL, apiKey, chatModel, responsesModel, embeddingModel] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

const chat = await client.chat.completions.create({
  model: chatModel,
  messages: [{ role: "user", content: "Say hello" }],
});
const stream = client.responses.stream({ model: responsesModel, input: "Say hello" });
let streamed = "";
for await (const event of stream) {
  if (event.type === "response.output_text.delta") streamed += event.delta;
}
const final = await stream.finalResponse();
const embedding = await client.embeddings.create({ model: embeddingModel, input: ["alpha", "beta"] });

console.log(JSON.stringify({
  chat: { text: chat.choices[0].message.content, cost: chat.usage.cost },
  responses: { text: streamed, final: final.output_text, cost: final.usage.cost },
  embeddings: { count: embedding.data.length, dims: embedding.data[0].embedding.length, cost: embedding.usage.cost },
}));
