"""The conversations app's models, one module per concern: chats (conversations, messages, feedback, notes),
tokens (bearer-token generations), sites (where the widget is embedded, and the customers they verify),
attachments (customers' images) and saved replies (the console's "/" texts)."""

from conversations.models.attachments import Attachment
from conversations.models.chats import Conversation, Feedback, InternalNote, Message, default_knowledge_base_id
from conversations.models.saved_replies import SavedReply
from conversations.models.sites import Site, SiteCustomer, new_identity_secret
from conversations.models.tokens import TokenGeneration

__all__ = [
    "Attachment",
    "Conversation",
    "Feedback",
    "InternalNote",
    "Message",
    "SavedReply",
    "Site",
    "SiteCustomer",
    "TokenGeneration",
    "default_knowledge_base_id",
    "new_identity_secret",
]
