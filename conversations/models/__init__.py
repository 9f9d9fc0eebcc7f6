"""The conversations app's models, one module per concern: chats (conversations, messages, feedback, notes),
tokens (bearer-token generations), sites (where the widget is embedded, and the customers they verify),
attachments (customers' images), saved replies (the console's "/" texts), ratings (CSAT) and gaps (questions the
knowledge base did not answer well)."""

from conversations.models.attachments import Attachment
from conversations.models.chats import Conversation, Feedback, InternalNote, Message, default_knowledge_base_id
from conversations.models.gaps import KnowledgeGap
from conversations.models.ratings import ConversationRating
from conversations.models.saved_replies import SavedReply
from conversations.models.sites import Site, SiteCustomer, new_identity_secret
from conversations.models.tokens import TokenGeneration

__all__ = [
    "Attachment",
    "Conversation",
    "ConversationRating",
    "Feedback",
    "InternalNote",
    "KnowledgeGap",
    "Message",
    "SavedReply",
    "Site",
    "SiteCustomer",
    "TokenGeneration",
    "default_knowledge_base_id",
    "new_identity_secret",
]
